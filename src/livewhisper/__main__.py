from livewhisper.cli.app import main

main(prog_name="livewhisper")
