"""Training AGSS-VOS: data (real sequences, composites, synthetic videos), the loss and the loop."""
