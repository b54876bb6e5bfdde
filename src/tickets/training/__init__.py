"""Training: the masked fine-tuning loop and its callbacks, evaluation, and adversarial attacks."""
