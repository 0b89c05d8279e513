"""bodycorr.render"""
