from reporun.cli import main

main()
