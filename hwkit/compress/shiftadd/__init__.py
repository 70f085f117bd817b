"""ShiftAdd: power-of-two shift weights, binary-coded quantisation, mult/shift mixture of experts."""
