"""Side-by-side comparisons of minigrad / mini_bert against PyTorch and HuggingFace."""
