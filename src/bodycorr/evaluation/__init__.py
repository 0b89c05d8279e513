"""bodycorr.evaluation"""
