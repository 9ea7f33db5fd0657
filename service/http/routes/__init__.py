"""Litestar controllers, one module per endpoint family; handlers stay thin and delegate below."""
