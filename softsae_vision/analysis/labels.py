"""Names and axis labels (with units) of the k quantities, shared by analysis and figures."""

K_HAT, L0 = "k_hat", "l0"

K_HAT_LABEL = "predicted k̂ (features)"
L0_LABEL = "realised L0 (features)"

QUANTITY_LABELS = {K_HAT: K_HAT_LABEL, L0: L0_LABEL}
QUANTITY_SYMBOLS = {K_HAT: "k̂", L0: "L0"}
