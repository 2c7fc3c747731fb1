"""LAB01's reference solutions: one self-contained file per part, each with
`train(*, data, device, seed, epochs) -> dict` (lab.yaml's `references` names them).
Loaded by grader.labs.import_reference as a package of the lab, never installed."""
