"""bodycorr.models"""
