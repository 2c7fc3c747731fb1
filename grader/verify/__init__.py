"""Independent verification: the trained model, evaluated again where the student's code never ran.

After the last student cell, the teardown code (`teardown_source()`, run by execute in the
student's kernel) captures the model the notebook evaluated on its test split as TorchScript
or a `torch.export` program, and describes the test split and its transform as data
(grader/probe/rec_export.py). Both files are written by code that shares the student's
process, so they are untrusted input. `verify_run` then, on the host:

1. reads `probe/verify/spec.json` strictly (size cap, nesting bound, schema, known transform
   steps only: `spec`);
2. tells the model file's format from its bytes (`archive`). Allowed captures:
   - TorchScript archives: restricted code (TorchScript's interpreter, no Python), loaded only
     inside the evaluator's sandbox;
   - torch.export programs, only when nothing in them is pickled or native (no `use_pickle`
     weights or constants, no custom or opaque objects, no AOTInductor libraries, sample inputs
     that only rebuild tensors, ATen-only graph targets, plain shape expressions): checked
     statically before anything loads them, and loaded only in the sandbox as well;
   - nothing else: a `torch.save` pickle, or an export with pickled payloads, is refused with
     the reason, and the verification goes to the TA (never a false fail).
   (`--sandbox none`, a student checking their own work on their own machine, has no sandbox
   at all, and says so.) Any tensor file the host itself reads is read with `weights_only=True` or not at all; the
   host reads none today;
3. maps the test split onto the lab's read-only dataset mounts (`plan`): data the student's
   code could have changed (anything under /tmp/work) is never used;
4. reads that split's images and labels itself, and those of the grader-only hidden split
   (grader.hidden_split, never mounted for students), and writes the images alone, shuffled
   together, into the evaluator's folder (`data`);
5. starts a fresh sandbox (same bwrap confinement and limits as the notebook, no dataset
   mounts, no GPU) running a small self-contained evaluator (`evaluator`) that returns only a
   predicted class per image and statistics of the model's parameters, as one size-capped
   JSON line, validated here;
6. scores the predictions against the labels it alone holds and returns the `verified` block of
   evidence.json (`host`): the visible test accuracy and per-class accuracy under the dataset's
   canonical class names, the hidden split's (`hidden_accuracy`, `hidden_n`, and
   `hidden_gap_flagged` when the visible accuracy is far above it), the parameters' statistics,
   or a one-sentence reason why there is none.

The student model's own predictions on a few test images (recorded in the kernel) are compared
with the evaluator's: when they disagree, the capture or the transform was not reproduced
faithfully and no numbers are reported, so a student is never flagged for a mismatch the grader
caused. Nothing the evaluated code prints or returns can set an accuracy: it never sees a label.
"""

from grader.verify.evaluator import _eval_build_transform, evaluator_source
from grader.verify.host import (
                                HIDDEN_MIN_GAP,
                                HIDDEN_Z,
                                _block,
                                check_result,
                                gap_flagged,
                                gap_test,
                                hidden_block,
                                teardown_source,
                                valid_parameters,
                                verify_run,
)
from grader.verify.plan import plan
from grader.verify.spec import NotVerified, read_spec, transform_text, validate_spec
from grader.verify.spec import NotVerified as _NotVerified
from grader.verify.spec import step as _step

__all__ = ["HIDDEN_MIN_GAP", "HIDDEN_Z", "NotVerified", "_NotVerified", "_block", "gap_flagged", "_eval_build_transform",
           "_step", "check_result", "evaluator_source", "gap_test", "hidden_block", "plan", "read_spec",
           "teardown_source", "transform_text", "valid_parameters", "validate_spec", "verify_run"]
