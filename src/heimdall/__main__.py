from heimdall.cli import run

run()
