pytest_plugins = [
    "tests.support.fixtures_mariadb",
    "tests.support.fixtures_engine",
]
