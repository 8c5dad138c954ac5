from livewhisper.cli import main

main(prog_name="livewhisper")
