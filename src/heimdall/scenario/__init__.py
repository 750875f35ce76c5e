"""Scenarios: the receiver network, the area, the band and the radio environment (docs/DATA.md).

`domain` holds the frozen dataclasses (and every default), `schema` turns untrusted YAML or plain data into a
validated `Scenario`, `builtin` loads the scenarios shipped with Heimdall or a file by path.
"""

DEFAULT_SCENARIO = "nw-italy"  # the built-in scenario commands use unless told otherwise
