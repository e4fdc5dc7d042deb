pytest_plugins = [
    "tests.support.fixtures_mariadb",
    "tests.support.fixtures_engine",
    "tests.support.fixtures_libvirt",
    "tests.support.fixtures_nfs",
]
