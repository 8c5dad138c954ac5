from livewhisper.cli import main

main()
