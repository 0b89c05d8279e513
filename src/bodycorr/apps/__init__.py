"""bodycorr.apps"""
