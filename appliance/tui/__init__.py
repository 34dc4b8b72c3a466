"""The terminal chat UI (Textual) that talks to the service over its Unix socket.

Exports :class:`ChatApp`, its chat store (:class:`ChatStore`, saved at :func:`chats_path`) and the key
bindings file (:func:`keymap_path`, read by :func:`load_keymap`). It depends on appliance.client and
the generation types only.
"""

from __future__ import annotations

from appliance.tui.app import ChatApp
from appliance.tui.keymap import config_path as keymap_path
from appliance.tui.keymap import load_keymap
from appliance.tui.store import ChatStore
from appliance.tui.store import default_path as chats_path

__all__ = ["ChatApp", "ChatStore", "chats_path", "keymap_path", "load_keymap"]
