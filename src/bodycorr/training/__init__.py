"""bodycorr.training"""
