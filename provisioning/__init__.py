"""Provisioning: TPU memory layouts, model needs, memory_edit, model install, first boot."""
