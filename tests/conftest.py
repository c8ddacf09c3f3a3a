"""Real services for the tests: the embedded broker, redis-server, MLflow on sqlite, in-process workers."""

pytest_plugins = ["tests.fixtures.broker", "tests.fixtures.mlflow", "tests.fixtures.redis", "tests.fixtures.worker"]
