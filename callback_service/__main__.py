from callback_service.main import main

main()
