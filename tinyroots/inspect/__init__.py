"""`python -m tinyroots.inspect`: look inside a trained GPT (see cli.py for the commands).

analysis.py computes (next-token distribution, attention weights, logit lens, attribution with
tinyroots' own autograd, embedding neighbours and PCA, surprise); views.py prints and draws;
report.py builds the one-page HTML report; cli.py is the command line.
"""
