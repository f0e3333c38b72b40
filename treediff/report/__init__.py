"""The run's report page: `<run_dir>/report.html`, built from the run directory alone.

figures.py   the tree, a leaf's image strips and class histograms, loss curves, the growth timeline
examples.py  the per-leaf images a run keeps for the page (real test images, decodings, samples)
page.py      gathers what a run directory holds and renders the jinja2 templates in templates/
"""
