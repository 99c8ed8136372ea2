from execution_service.main import main

main()
