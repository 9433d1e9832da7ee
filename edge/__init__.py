"""edgesteer engine: health, steering, plans, appliers, control plane and the lab."""
