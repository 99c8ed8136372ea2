from operations_service.main import main

main()
