from research_optim.app import main

main()
