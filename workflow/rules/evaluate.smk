# Evaluation rules: zero-shot, fine-tune, integration, spatial, bridge.
