"""The flags of each command, one module per command named like its module in heimdall.commands (`add_parser`).
They import only configuration dataclasses and constants, so that `heimdall --help` stays quick."""
