"""HTTP: the outermost middleware, the direct infer path, the Litestar routes, auth, error responses and
the dashboard's assets. May import every other package; nothing imports it but ``service.app``.
"""
