"""TA review in the browser: the queue of decisions (`dllab review OUT`).

store: one record per decision, and OUT/overrides.yaml made from them; queue: what must be
decided; evidence: what a decision page shows; app: the web application and its server.
"""
