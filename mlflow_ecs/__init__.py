"""mlflow-ecs: a private, authenticated MLflow tracking server on AWS ECS Fargate, with boto3."""

__version__ = "0.1.0"
