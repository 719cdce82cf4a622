"""The baseline: a bare Flask endpoint that parses a JSON body and answers 202."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/bare")
def bare():
    return jsonify({"received": request.get_json()}), 202


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@app.get("/bare")
def bare_list():
    """The read baseline: a JSON list of 100 small objects."""
    return jsonify({"data": [{"id": i, "status": "succeeded"} for i in range(100)],
                    "has_more": True})
