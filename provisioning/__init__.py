"""Provisioning: make a box fit its model, and install models.

Modules: ``board`` and ``ion`` (the live NPU/VPU/VPP layout), ``needs`` (what a model needs),
``plan`` and ``layout`` (the layout to ask for), ``memory_edit`` / ``fit_image`` / ``apply`` /
``verify`` / ``state`` (staged boot-image change, verified after the reboot, rollback), ``catalog``,
``download``, ``pull`` and ``install`` (models into the store), ``firstboot`` (all of it once, at first
boot). Its settings are the config's ``provisioning:`` section (``settings``); its commands live in
appliance.cli.provision_cmd.
"""
