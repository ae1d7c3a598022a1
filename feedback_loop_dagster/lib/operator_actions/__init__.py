"""What an operator does by hand: register and activate versions, start experiments, approve or
dismiss a decision waiting for review, roll a promotion back.

Above the registry, the experiments and the apply stage, which it calls; nothing in them calls it.
"""
