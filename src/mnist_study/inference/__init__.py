"""After training: a train.py checkpoint evaluated (evaluate), its predictions for one's own images (images,
predict), exported for other runtimes (export) and tried in the browser (serve, static/). The entry points
eval.py, predict.py, export.py and serve.py; their typed configs (config) and conf/<tool>.yaml."""
