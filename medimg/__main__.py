from medimg.cli import main

main()
