"""The components: one package per pipeline stage, plain functions over files; common/ holds what stages share."""
