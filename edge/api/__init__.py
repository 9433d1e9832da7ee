"""HTTP control plane: /metrics and /healthz today; REST status, plan and freeze later."""
