"""Paper steps 6-7: TimeInv / Textual Inversion (+ LoRA) on concept videos, per backend; MLflow tracking."""
