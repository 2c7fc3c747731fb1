"""Code that runs inside the student's kernel (sent as source text, never imported there)."""
