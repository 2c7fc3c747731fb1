"""Parsers for printed metrics, on real-looking student output (no kernel needed)."""

from __future__ import annotations

import json
import random
import string

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from grader.parsers import (CIFAR10_CLASSES, CLASS_SETS, FOOD11_CLASSES, MNIST_CLASSES,
                            MetricMention, ParsedMetrics, canonical_class, parse_curves,
                            parse_html, parse_notebook, parse_text)

TUTORIAL_NAMES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TUTORIAL_ACC = (37.9, 62.2, 28.1, 40.3, 47.6, 44.0, 69.3, 60.2, 72.5, 59.5)

# The PyTorch CIFAR-10 tutorial's test cell output (current version).
TUTORIAL_OUTPUT = "Accuracy of the network on the 10000 test images: 54 %\n" + "".join(
    f"Accuracy for class: {n:5s} is {a:.1f} %\n" for n, a in zip(TUTORIAL_NAMES, TUTORIAL_ACC))

# The older tutorial: "%5s" padding and integer percents.
OLD_TUTORIAL_OUTPUT = "".join(
    f"Accuracy of {n:>5s} : {int(a)} %\n" for n, a in zip(TUTORIAL_NAMES, TUTORIAL_ACC))

CLASSIFICATION_REPORT = """\
              precision    recall  f1-score   support

       plane       0.60      0.54      0.57      1000
         car       0.70      0.72      0.71      1000
        bird       0.45      0.38      0.41      1000
         cat       0.38      0.41      0.39      1000
        deer       0.50      0.49      0.49      1000
         dog       0.47      0.44      0.45      1000
        frog       0.61      0.70      0.65      1000
       horse       0.63      0.62      0.62      1000
        ship       0.69      0.73      0.71      1000
       truck       0.62      0.65      0.63      1000

    accuracy                           0.57     10000
   macro avg       0.57      0.57      0.57     10000
weighted avg       0.57      0.57      0.57     10000
"""
REPORT_RECALL = {"airplane": 0.54, "automobile": 0.72, "bird": 0.38, "cat": 0.41, "deer": 0.49,
                 "dog": 0.44, "frog": 0.70, "horse": 0.62, "ship": 0.73, "truck": 0.65}

MNIST_REPORT = """\
              precision    recall  f1-score   support

           0       0.98      0.99      0.99       980
           1       0.99      0.99      0.99      1135
           2       0.97      0.96      0.97      1032
           3       0.96      0.97      0.97      1010
           4       0.97      0.97      0.97       982
           5       0.97      0.96      0.97       892
           6       0.98      0.97      0.98       958
           7       0.97      0.96      0.97      1028
           8       0.96      0.96      0.96       974
           9       0.96      0.96      0.96      1009

    accuracy                           0.97     10000
   macro avg       0.97      0.97      0.97     10000
weighted avg       0.97      0.97      0.97     10000
"""

FOOD_COUNTS = {"Bread": (250, 368), "Dairy product": (100, 148), "Dessert": (300, 500),
               "Egg": (200, 335), "Fried food": (180, 287), "Meat": (300, 432),
               "Noodles/Pasta": (140, 147), "Rice": (90, 96), "Seafood": (200, 303),
               "Soup": (450, 500), "Vegetable/Fruit": (200, 231)}

# pandas' DataFrame.to_html(), as Jupyter shows it.
DATAFRAME_HTML = """<div>
<style scoped>
    .dataframe tbody tr th:only-of-type { vertical-align: middle; }
    .dataframe thead th { text-align: right; }
</style>
<table border="1" class="dataframe">
  <thead>
    <tr style="text-align: right;">
      <th></th>
      <th>class</th>
      <th>correct</th>
      <th>total</th>
      <th>accuracy</th>
    </tr>
  </thead>
  <tbody>
""" + "".join(f"""    <tr>
      <th>{i}</th>
      <td>{n}</td>
      <td>{int(a * 10)}</td>
      <td>1000</td>
      <td>{a / 100:.3f}</td>
    </tr>
""" for i, (n, a) in enumerate(zip(TUTORIAL_NAMES, TUTORIAL_ACC))) + """  </tbody>
</table>
</div>"""

DATAFRAME_TEXT = "   class  correct  total  accuracy\n" + "".join(
    f"{i}  {n:>5s}  {int(a * 10):>7d}   1000  {a / 100:>8.3f}\n"
    for i, (n, a) in enumerate(zip(TUTORIAL_NAMES, TUTORIAL_ACC)))

TUTORIAL_FRACTIONS = {c: a / 100 for c, a in zip(CIFAR10_CLASSES, TUTORIAL_ACC)}


def one(mentions: list[MetricMention], kind: str) -> MetricMention:
    found = [m for m in mentions if m.kind == kind]
    assert len(found) == 1, mentions
    return found[0]


def per_class(mentions: list[MetricMention]) -> dict[str, float]:
    return {m.class_name: m.value for m in mentions if m.kind == "class_accuracy"}  # type: ignore[misc]


def approx_dict(d: dict[str, float]) -> dict[str, object]:
    return {k: pytest.approx(v) for k, v in d.items()}


# --- class names -------------------------------------------------------------------------

@pytest.mark.parametrize("name, classes, expected", [
    ("plane", CIFAR10_CLASSES, "airplane"),
    ("Airplane", CIFAR10_CLASSES, "airplane"),
    ("aeroplane", CIFAR10_CLASSES, "airplane"),
    ("planes", CIFAR10_CLASSES, "airplane"),
    ("  car ", CIFAR10_CLASSES, "automobile"),
    ("AUTOMOBILE", CIFAR10_CLASSES, "automobile"),
    ("horses", CIFAR10_CLASSES, "horse"),
    ("'truck'", CIFAR10_CLASSES, "truck"),
    ("3", CIFAR10_CLASSES, "cat"),
    ("class 3", CIFAR10_CLASSES, "cat"),
    ("class_3", CIFAR10_CLASSES, "cat"),
    ("3 (cat)", CIFAR10_CLASSES, "cat"),
    ("cat (3)", CIFAR10_CLASSES, "cat"),
    ("class 10", CIFAR10_CLASSES, None),
    ("pizza", CIFAR10_CLASSES, None),
    ("", CIFAR10_CLASSES, None),
    ("Noodles/Pasta", FOOD11_CLASSES, "Noodles/Pasta"),
    ("noodles_pasta", FOOD11_CLASSES, "Noodles/Pasta"),
    ("Noodles-Pasta", FOOD11_CLASSES, "Noodles/Pasta"),
    ("noodles", FOOD11_CLASSES, "Noodles/Pasta"),
    ("pasta", FOOD11_CLASSES, "Noodles/Pasta"),
    ("Vegetable/Fruit", FOOD11_CLASSES, "Vegetable/Fruit"),
    ("vegetable_fruit", FOOD11_CLASSES, "Vegetable/Fruit"),
    ("fruits", FOOD11_CLASSES, "Vegetable/Fruit"),
    ("Dairy product", FOOD11_CLASSES, "Dairy product"),
    ("dairy_product", FOOD11_CLASSES, "Dairy product"),
    ("dairy", FOOD11_CLASSES, "Dairy product"),
    ("Fried-food", FOOD11_CLASSES, "Fried food"),
    ("friedfood", FOOD11_CLASSES, "Fried food"),
    ("sea food", FOOD11_CLASSES, "Seafood"),
    ("eggs", FOOD11_CLASSES, "Egg"),
    ("10", FOOD11_CLASSES, "Vegetable/Fruit"),
    ("class 6", FOOD11_CLASSES, "Noodles/Pasta"),
    ("plane", FOOD11_CLASSES, None),
    ("7", MNIST_CLASSES, "7"),
    ("digit 7", MNIST_CLASSES, "7"),
    ("seven", MNIST_CLASSES, "7"),
])
def test_canonical_class(name: str, classes: tuple[str, ...], expected: str | None) -> None:
    assert canonical_class(name, classes) == expected


def test_class_sets_are_the_datasets_lists() -> None:
    assert CLASS_SETS["cifar10"][0] == "airplane" and len(CLASS_SETS["cifar10"]) == 10
    assert len(CLASS_SETS["food11"]) == 11 and CLASS_SETS["food11"][6] == "Noodles/Pasta"
    assert CLASS_SETS["mnist"] == tuple("0123456789")


# --- total accuracy and loss -------------------------------------------------------------

@pytest.mark.parametrize("line, kind, value, split", [
    ("Accuracy of the network on the 10000 test images: 54 %", "test_accuracy", 0.54, "test"),
    ("Test set: Average loss: 0.0273, Accuracy: 7036/10000 (70%)", "test_accuracy", 0.7036, "test"),
    ("Test set: Average loss: 0.0273, Accuracy: 7036/10000 (70%)", "test_loss", 0.0273, "test"),
    ("test loss 1.234, acc 0.55", "test_accuracy", 0.55, "test"),
    ("test loss 1.234, acc 0.55", "test_loss", 1.234, "test"),
    ("Test Accuracy: 70.36%", "test_accuracy", 0.7036, "test"),
    ("Test Accuracy: 70.36 %", "test_accuracy", 0.7036, "test"),
    ("test_acc = 0.7036", "test_accuracy", 0.7036, "test"),
    ("Test accuracy is 70.36", "test_accuracy", 0.7036, "test"),
    ("Accuracy: 55%", "test_accuracy", 0.55, None),
    ("accuracy = 0.55", "test_accuracy", 0.55, None),
    ("Accuarcy: 55 %", "test_accuracy", 0.55, None),
    ("Accuracy (%): 55.5", "test_accuracy", 0.555, None),
    ("Accuracy: tensor(0.5500, device='cuda:0')", "test_accuracy", 0.55, None),
    ("Top-1 accuracy: 54.3%", "test_accuracy", 0.543, None),
    ("Accuracy on test set: 61.2%", "test_accuracy", 0.612, "test"),
    ("accuracy: 0.612 (test)", "test_accuracy", 0.612, "test"),
    ("Test Accuracy (Overall): 65% (6500/10000)", "test_accuracy", 0.65, "test"),
    ("Total test loss: 1.0345 | total test accuracy: 64.21%", "test_loss", 1.0345, "test"),
    ("Total test loss: 1.0345 | total test accuracy: 64.21%", "test_accuracy", 0.6421, "test"),
    ("Evaluation accuracy on Food-11: 0.7725", "test_accuracy", 0.7725, "test"),
    ("Validation Accuracy: 58.0 %", "val_accuracy", 0.58, "val"),
    ("val_acc: 0.58", "val_accuracy", 0.58, "val"),
    ("Training accuracy: 99.1%", "train_accuracy", 0.991, "train"),
    ("train acc 0.99", "train_accuracy", 0.99, "train"),
    # a line announcing the end of training reports on training (issue 12 I, second round)
    ("Finished Training. Accuracy: 55%", "train_accuracy", 0.55, "train"),
    ("[1,  2000] loss: 2.189", "train_loss", 2.189, "train"),
    ("Epoch 3/10, loss 1.02", "train_loss", 1.02, "train"),
    ("Test loss: 1.2e-02", "test_loss", 0.012, "test"),
    ("accuracy_score: 0.55", "test_accuracy", 0.55, None),
    ("The accuracy of the model on 10000 test images is 54.12%", "test_accuracy", 0.5412, "test"),
    ("Total accuracy:  tensor(70.3600)", "test_accuracy", 0.7036, None),
    ("Epoch: 1 \tTraining Loss: 1.234", "train_loss", 1.234, "train"),
    ("Epoch: 1 \tValidation Loss: 1.100", "val_loss", 1.1, "val"),
    ("Epoch [5/5], Loss: 0.4021, Accuracy: 85.43%", "train_accuracy", 0.8543, "train"),
])
def test_total_metric_lines(line: str, kind: str, value: float, split: str | None) -> None:
    m = one(parse_text(line), kind)
    assert m.value == pytest.approx(value)
    assert m.split_hint == split
    assert m.raw == line and m.class_name is None and m.source == "stdout"


def test_keras_like_line_splits_each_metric() -> None:
    got = parse_text("Epoch 3/10 - loss: 1.02 - acc: 0.61 - val_loss: 1.10 - val_acc: 0.58")
    assert [(m.kind, m.value, m.split_hint) for m in got] == [
        ("train_loss", 1.02, "train"), ("train_accuracy", 0.61, "train"),
        ("val_loss", 1.10, "val"), ("val_accuracy", 0.58, "val")]


@pytest.mark.parametrize("line, value, images", [
    # T14B N1/N2: the count of images measured on is not the accuracy
    ("Accuracy on 100 of 500 test images: 74.00 %", 0.74, 100),
    ("Accuracy on 100/100 test images: 74.00 %", 0.74, 100),
    # N3 and the same kind: the images counted in a correct/total pair
    ("Test accuracy: 74.00 % (74/100 correct)", 0.74, 100),
    ("Test set: Average loss: 0.0001, Accuracy: 9800/10000 (98%)", 0.98, 10000),
    ("Accuracy of the network on the 10000 test images: 54 %", 0.54, 10000),
    ("epoch (3/10) test acc 50%", 0.50, None),
])
def test_the_images_a_total_was_measured_on_are_read_apart_from_it(line: str, value: float, images: int | None) -> None:
    from grader.parsers.values import image_count

    assert one(parse_text(line), "test_accuracy").value == pytest.approx(value)
    assert image_count(line) == images


def test_metric_inherits_split_from_the_metric_before_it() -> None:
    got = parse_text("Train Loss: 1.0 | Acc: 0.6 | Val Loss: 1.2 Acc: 0.5")
    assert [(m.kind, m.split_hint) for m in got] == [
        ("train_loss", "train"), ("train_accuracy", "train"), ("val_loss", "val"), ("val_accuracy", "val")]
    got = parse_text("epoch 3 train loss 1.02 test acc 61.2%")
    assert [(m.kind, m.value, m.split_hint) for m in got] == [
        ("train_loss", 1.02, "train"), ("test_accuracy", pytest.approx(0.612), "test")]


def test_pytorch_quickstart_test_error_block() -> None:
    got = parse_text("Test Error: \n Accuracy: 54.3%, Avg loss: 1.282151 \n")
    assert [(m.kind, m.value, m.split_hint) for m in got] == [
        ("test_accuracy", pytest.approx(0.543), "test"), ("test_loss", 1.282151, "test")]


def test_best_so_far_does_not_inherit_the_test_split() -> None:
    got = parse_text("test acc: 0.70 best acc: 0.72")
    assert [(m.value, m.split_hint) for m in got] == [(0.70, "test"), (0.72, None)]
    assert one(parse_text("Best test accuracy: 72%"), "test_accuracy").split_hint == "test"


def test_section_line_names_the_split_of_what_follows() -> None:
    got = parse_text("==== Evaluating on the test set ====\nAccuracy: 61%\nLoss: 1.1\n")
    assert [(m.kind, m.split_hint) for m in got] == [("test_accuracy", "test"), ("test_loss", "test")]
    got = parse_text("Start Training\nFinished Training\nAccuracy: 61%\n")
    assert one(got, "test_accuracy").split_hint is None


@pytest.mark.parametrize("line", [
    "Top-5 accuracy: 90.1%",
    "acc@5 90.1",
    "Accuracy: -0.5",
    "Accuracy: 150%",
    "Accuracy: nan",
    "accuracy: inf",
    "Accuracy: 3000/2000",
    "loss: nan",
    "loss: -1.5",
    "Number of test images: 10000",
    "Accuracy of the network on the 10000 test images",
    "Epoch 3/10",
    "Predicted:    cat  ship  ship plane",
    "GroundTruth:    cat  ship  ship plane",
    "Predicted: cat (0.92)",
    "Files already downloaded and verified",
    "torch.Size([4, 3, 32, 32])",
    "accuracy_history: [0.1, 0.2, 0.3]",
    "Bread: 994 images",
    "",
])
def test_lines_that_are_not_metrics(line: str) -> None:
    assert parse_text(line, classes=CIFAR10_CLASSES) == []


@pytest.mark.parametrize("printed, value", [
    ("Test accuracy: 0.7036", 0.7036),
    ("Test accuracy: 70.36%", 0.7036),
    ("Test accuracy: 70.36 %", 0.7036),
    ("Test accuracy: 70.36", 0.7036),
    ("Test accuracy: 7036/10000", 0.7036),
    ("Test accuracy: 7036 / 10000", 0.7036),
    ("Test accuracy: 7036 out of 10000", 0.7036),
    ("Test accuracy: 70 % (7036/10000)", 0.7036),
    ("Test accuracy: 1.0", 1.0),
    ("Test accuracy: 0", 0.0),
    ("Test accuracy: .55", 0.55),
])
def test_number_formats_become_fractions(printed: str, value: float) -> None:
    assert one(parse_text(printed), "test_accuracy").value == pytest.approx(value)


# --- per-class accuracy ------------------------------------------------------------------

def test_tutorial_output_block() -> None:
    got = parse_text(TUTORIAL_OUTPUT, classes=CIFAR10_CLASSES, cell=7)
    total = one(got, "test_accuracy")
    assert total.value == pytest.approx(0.54) and total.split_hint == "test" and total.cell == 7
    assert per_class(got) == approx_dict(TUTORIAL_FRACTIONS)
    plane = next(m for m in got if m.class_name == "airplane")
    assert plane.raw == "Accuracy for class: plane is 37.9 %"


def test_old_tutorial_format_with_padding() -> None:
    got = parse_text(OLD_TUTORIAL_OUTPUT, classes=CIFAR10_CLASSES)
    assert per_class(got) == approx_dict({c: int(a) / 100 for c, a in zip(CIFAR10_CLASSES, TUTORIAL_ACC)})
    assert not [m for m in got if m.kind == "test_accuracy"]  # "Accuracy of plane" is not a total


@pytest.mark.parametrize("line, name, value", [
    ("Accuracy of   car : 58 %", "automobile", 0.58),
    ("Accuracy of plane : 54 %", "airplane", 0.54),
    ("Accuracy for class: plane is 54.7 %", "airplane", 0.547),
    ("Accuracy for class plane is: 55.2 %", "airplane", 0.552),
    ("class 3 (cat): 41.2%", "cat", 0.412),
    ("Class 3 - cat: 41.2%", "cat", 0.412),
    ("cat (class 3): 41.2%", "cat", 0.412),
    ("class 3: 0.412", "cat", 0.412),
    ("Class[3] accuracy = 41.2", "cat", 0.412),
    ("Test Accuracy of airplane: 71% (712/1000)", "airplane", 0.712),
    ("automobile: 612/1000", "automobile", 0.612),
    ("Airplane accuracy: 0.71", "airplane", 0.71),
    ("Accuracy of truck    : 66.70%", "truck", 0.667),
    ("horses - 60%", "horse", 0.60),
])
def test_cifar_per_class_lines(line: str, name: str, value: float) -> None:
    got = parse_text(line, classes=CIFAR10_CLASSES)
    assert per_class(got) == {name: pytest.approx(value)}
    assert not [m for m in got if m.kind == "test_accuracy"]


def test_per_class_dict_and_positional_list() -> None:
    got = parse_text("{'plane': 0.54, 'car': 0.61, 'bird': 0.38}", classes=CIFAR10_CLASSES)
    assert per_class(got) == approx_dict({"airplane": 0.54, "automobile": 0.61, "bird": 0.38})
    values = [0.54, 0.61, 0.38, 0.41, 0.49, 0.44, 0.70, 0.62, 0.73, 0.65]
    line = "per-class accuracy: [" + " ".join(f"{v:.2f}" for v in values) + "]"
    assert per_class(parse_text(line, classes=CIFAR10_CLASSES)) == approx_dict(dict(zip(CIFAR10_CLASSES, values)))
    # numpy wraps long arrays over two lines
    wrapped = ("class accuracy [0.54 0.61 0.38 0.41 0.49 0.44 0.7\n 0.62 0.73 0.65]")
    assert per_class(parse_text(wrapped, classes=CIFAR10_CLASSES)) == approx_dict(dict(zip(CIFAR10_CLASSES, values)))


def test_bare_per_class_numbers_in_one_block_share_a_unit() -> None:
    text = "plane: 54.0\ncar: 61.0\nbird: 0.8\n"  # percents without '%'; bird is 0.8 %
    assert per_class(parse_text(text, classes=CIFAR10_CLASSES)) == approx_dict(
        {"airplane": 0.54, "automobile": 0.61, "bird": 0.008})


def test_classification_report() -> None:
    got = parse_text(CLASSIFICATION_REPORT, classes=CIFAR10_CLASSES)
    assert per_class(got) == approx_dict(REPORT_RECALL)
    assert one(got, "test_accuracy").value == pytest.approx(0.57)


def test_classification_report_with_numeric_labels_for_mnist() -> None:
    got = parse_text(MNIST_REPORT, classes=MNIST_CLASSES)
    pc = per_class(got)
    assert sorted(pc) == list(MNIST_CLASSES)
    assert pc["2"] == pytest.approx(0.96) and pc["3"] == pytest.approx(0.97)
    assert one(got, "test_accuracy").value == pytest.approx(0.97)


def test_classification_report_with_food_names_and_no_class_list() -> None:
    rows = "".join(f"{n:>16s}       0.70      {a / b:.2f}      0.70       {b}\n"
                   for n, (a, b) in FOOD_COUNTS.items())
    report = f"{'':16s}  precision    recall  f1-score   support\n\n{rows}\n{'accuracy':>16s}{'':22s}0.71      3347\n"
    got = parse_text(report)  # no class list: Food-11 names are still recognised
    assert per_class(got) == approx_dict({n: round(a / b, 2) for n, (a, b) in FOOD_COUNTS.items()})
    assert one(got, "test_accuracy").value == pytest.approx(0.71)


def test_dataframe_as_text() -> None:
    got = parse_text(DATAFRAME_TEXT, classes=CIFAR10_CLASSES, source="text/plain")
    assert per_class(got) == approx_dict(TUTORIAL_FRACTIONS)
    assert {m.source for m in got} == {"text/plain"}


def test_dataframe_text_variants() -> None:
    index_is_class = "       accuracy (%)\nplane          54.0\ncar            61.0\nbird           38.0\n"
    assert per_class(parse_text(index_is_class, classes=CIFAR10_CLASSES)) == approx_dict(
        {"airplane": 0.54, "automobile": 0.61, "bird": 0.38})
    counts_only = "   class  correct  total\n0  plane      540   1000\n1    car      610   1000\n"
    assert per_class(parse_text(counts_only, classes=CIFAR10_CLASSES)) == approx_dict(
        {"airplane": 0.54, "automobile": 0.61})
    wide = "   plane   car  bird   cat\n0   0.54  0.61  0.38  0.41\n"
    assert per_class(parse_text(wide, classes=CIFAR10_CLASSES)) == approx_dict(
        {"airplane": 0.54, "automobile": 0.61, "bird": 0.38, "cat": 0.41})
    train_test = "class  train_acc  test_acc\nplane  0.99  0.54\ncar  0.98  0.61\n"
    assert per_class(parse_text(train_test, classes=CIFAR10_CLASSES)) == approx_dict(
        {"airplane": 0.54, "automobile": 0.61})


def test_markdown_table_with_multiword_food_names() -> None:
    table = ("| Class | Correct | Total | Accuracy (%) |\n|---|---|---|---|\n"
             "| Dairy product | 100 | 148 | 67.6 |\n| Noodles/Pasta | 140 | 147 | 95.2 |\n")
    assert per_class(parse_text(table, classes=FOOD11_CLASSES)) == approx_dict(
        {"Dairy product": 0.676, "Noodles/Pasta": 0.952})


def test_training_log_table_is_not_per_class() -> None:
    log = "epoch  loss   acc\n1      2.10   0.30\n2      1.80   0.40\n3      1.50   0.50\n"
    assert per_class(parse_text(log, classes=CIFAR10_CLASSES)) == {}


def test_dataframe_as_html() -> None:
    got = parse_html(DATAFRAME_HTML, classes=CIFAR10_CLASSES, cell=4)
    assert per_class(got) == approx_dict(TUTORIAL_FRACTIONS)
    assert {(m.source, m.cell) for m in got} == {("text/html", 4)}
    assert "plane" in got[0].raw


def test_html_classification_report_frames() -> None:
    transposed = ("<table class=\"dataframe\"><thead><tr><th></th><th>precision</th><th>recall</th>"
                  "<th>f1-score</th><th>support</th></tr></thead><tbody>"
                  "<tr><th>plane</th><td>0.60</td><td>0.54</td><td>0.57</td><td>1000.0</td></tr>"
                  "<tr><th>car</th><td>0.70</td><td>0.72</td><td>0.71</td><td>1000.0</td></tr>"
                  "<tr><th>accuracy</th><td>0.57</td><td>0.57</td><td>0.57</td><td>0.57</td></tr>"
                  "<tr><th>macro avg</th><td>0.57</td><td>0.57</td><td>0.57</td><td>10000.0</td></tr>"
                  "</tbody></table>")
    got = parse_html(transposed, classes=CIFAR10_CLASSES)
    assert per_class(got) == approx_dict({"airplane": 0.54, "automobile": 0.72})
    assert one(got, "test_accuracy").value == pytest.approx(0.57)
    # pd.DataFrame(classification_report(..., output_dict=True)): classes are columns
    wide = ("<table class=\"dataframe\"><thead><tr><th></th><th>plane</th><th>car</th><th>bird</th>"
            "<th>accuracy</th><th>macro avg</th></tr></thead><tbody>"
            "<tr><th>precision</th><td>0.6</td><td>0.7</td><td>0.45</td><td>0.57</td><td>0.57</td></tr>"
            "<tr><th>recall</th><td>0.54</td><td>0.72</td><td>0.38</td><td>0.57</td><td>0.57</td></tr>"
            "<tr><th>support</th><td>1000</td><td>1000</td><td>1000</td><td>0.57</td><td>3000</td></tr>"
            "</tbody></table>")
    got = parse_html(wide, classes=CIFAR10_CLASSES)
    assert per_class(got) == approx_dict({"airplane": 0.54, "automobile": 0.72, "bird": 0.38})
    assert one(got, "test_accuracy").value == pytest.approx(0.57)


def test_html_text_and_headerless_tables() -> None:
    html = ("<p>Test accuracy: <b>61.5%</b></p><pre>test loss 1.02</pre>"
            "<table><tr><td>plane</td><td>54 %</td></tr><tr><td>car</td><td>61 %</td></tr></table>")
    got = parse_html(html, classes=CIFAR10_CLASSES)
    assert one(got, "test_accuracy").value == pytest.approx(0.615)
    assert one(got, "test_loss").value == pytest.approx(1.02)
    assert per_class(got) == approx_dict({"airplane": 0.54, "automobile": 0.61})


@pytest.mark.parametrize("html", [
    "<table><tr><td>plane", "<table><table></tr></td>", "<<>>&&&#;", "<td>0.5</td>", "<script>acc: 0.5</script>",
    "<table class='dataframe'><thead><tr><th>accuracy</th></tr></thead><tbody><tr><td>x</td></tr></tbody>",
])
def test_malformed_html_does_not_raise(html: str) -> None:
    assert isinstance(parse_html(html), list)


def test_food11_per_class_lines() -> None:
    text = ("Accuracy of Bread : 250/368\n"
            "Accuracy of Dairy product : 100/148\n"
            "Dessert: 60.0%\n"
            "egg          0.597\n"
            "Fried_food: 62.7 %\n"
            "Meat accuracy = 69.4%\n"
            "Noodles/Pasta: 71.3%\n"
            "rice: 93.75%\n"
            "Seafood: 66.0 %\n"
            "soup: 90.0 %\n"
            "Vegetable/Fruit: 86.6 %\n")
    got = parse_text(text, classes=FOOD11_CLASSES)
    pc = per_class(got)
    assert sorted(pc) == sorted(FOOD11_CLASSES)
    assert pc["Bread"] == pytest.approx(250 / 368)
    assert pc["Dairy product"] == pytest.approx(100 / 148)
    assert pc["Egg"] == pytest.approx(0.597) and pc["Fried food"] == pytest.approx(0.627)
    assert pc["Noodles/Pasta"] == pytest.approx(0.713)


@pytest.mark.parametrize("line, name, value", [
    ("noodles_pasta: 0.71", "Noodles/Pasta", 0.71),
    ("Noodles-Pasta : 71 %", "Noodles/Pasta", 0.71),
    ("class 6: 0.713", "Noodles/Pasta", 0.713),
    ("class 10 (Vegetable/Fruit): 86.6%", "Vegetable/Fruit", 0.866),
    ("dairy: 0.5", "Dairy product", 0.5),
    ("Accuracy of Bread : 250/368", "Bread", 250 / 368),
    ("Bread: 250/368", "Bread", 250 / 368),
    ("Vegetable and Fruit: 200 of 231", "Vegetable/Fruit", 200 / 231),
])
def test_food11_variants(line: str, name: str, value: float) -> None:
    assert per_class(parse_text(line, classes=FOOD11_CLASSES)) == {name: pytest.approx(value)}


def test_class_index_without_a_class_list_stays_an_index() -> None:
    assert per_class(parse_text("class 6: 0.713")) == {"6": pytest.approx(0.713)}
    assert per_class(parse_text("Noodles/Pasta: 71.3%")) == {"Noodles/Pasta": pytest.approx(0.713)}


@pytest.mark.parametrize("line, name, value", [
    ("digit 7: 98.1%", "7", 0.981),
    ("Accuracy of digit 7 : 98 %", "7", 0.98),
    ("class 7: 0.98", "7", 0.98),
    ("7: 98.1%", "7", 0.981),
    ("Accuracy of 3: 97.0 %", "3", 0.97),
    ("Accuracy of     3 : 97 %", "3", 0.97),
    ("Test Accuracy of     0: 99% (977/980)", "0", 977 / 980),
])
def test_mnist_digits(line: str, name: str, value: float) -> None:
    got = parse_text(line, classes=MNIST_CLASSES)
    assert per_class(got) == {name: pytest.approx(value)}
    assert not [m for m in got if m.kind == "test_accuracy"]  # the digit is not a total


# --- logs, progress bars and curves ------------------------------------------------------

TRAIN_THEN_TEST_LOG = """\
Epoch 1 | train loss 1.91 | train acc 30.5% | val loss 1.70 | val acc 38.0%
Epoch 2 | train loss 1.52 | train acc 45.1% | val loss 1.44 | val acc 48.2%
Epoch 3 | train loss 1.30 | train acc 53.9% | val loss 1.33 | val acc 52.7%
Finished Training
Test loss: 1.35, Test accuracy: 52.1%
"""


def test_training_log_followed_by_test_lines() -> None:
    got = parse_text(TRAIN_THEN_TEST_LOG)
    tests = [m for m in got if m.split_hint == "test"]
    assert [(m.kind, m.value) for m in tests] == [("test_loss", 1.35), ("test_accuracy", pytest.approx(0.521))]
    assert {m.split_hint for m in got} == {"train", "val", "test"}


# --- training progress lines are never test metrics (issue 12 I) ---------------------------

@pytest.mark.parametrize(("line", "kinds"), [
    # the cases
    ("7 epoch, training accuracy: 44.43%, loss = 0.0500", [("train_accuracy", 0.4443), ("train_loss", 0.05)]),
    ("epoch 1 train loss 2.297", [("train_loss", 2.297)]),
    # the tutorial, PyTorch's MNIST example, Keras, tqdm, and counters in odd places
    ("[1,  2000] loss: 2.197", [("train_loss", 2.197)]),
    ("Train Epoch: 1 [0/60000 (0%)]\tLoss: 2.300000", [("train_loss", 2.3)]),
    ("1563/1563 [==============================] - 10s 6ms/step - loss: 0.3000 - accuracy: 0.9000",
     [("train_loss", 0.3), ("train_accuracy", 0.9)]),
    ("1563/1563 - 10s - loss: 0.3000 - accuracy: 0.9000", [("train_loss", 0.3), ("train_accuracy", 0.9)]),
    ("loss: 0.3000 - accuracy: 0.9000 - val_loss: 0.5000 - val_accuracy: 0.8000",
     [("train_loss", 0.3), ("train_accuracy", 0.9), ("val_loss", 0.5), ("val_accuracy", 0.8)]),
    ("Epoch 3/10 train_acc=0.61 test_acc=0.55", [("train_accuracy", 0.61), ("test_accuracy", 0.55)]),
    ("acc 0.9 test_acc 0.8", [("train_accuracy", 0.9), ("test_accuracy", 0.8)]),
    ("epoch1 loss 2.3 acc 41%", [("train_loss", 2.3), ("train_accuracy", 0.41)]),
    ("[3/10] loss: 1.2 acc: 45%", [("train_loss", 1.2), ("train_accuracy", 0.45)]),
    ("global_step=100 loss=1.2", [("train_loss", 1.2)]),
    ("Loss after epoch 3: 1.2", [("train_loss", 1.2)]),
    ("100%|██████████| 12500/12500 [01:00<00:00, 200it/s, loss=1.23, acc=0.55]",
     [("train_loss", 1.23), ("train_accuracy", 0.55)]),
    # test lines stay test lines
    ("Test set: Average loss: 0.0003, Accuracy: 9800/10000 (98%)", [("test_loss", 0.0003), ("test_accuracy", 0.98)]),
    ("Accuracy after 10 epochs: 55%", [("test_accuracy", 0.55)]),
    ("Epoch 5 | Train Loss: 0.5 | Test Acc: 70%", [("train_loss", 0.5), ("test_accuracy", 0.7)]),
])
def test_progress_lines_are_training_metrics(line: str, kinds: list[tuple[str, float]]) -> None:
    got = parse_text(line)
    assert [(m.kind, m.value) for m in got] == [(k, pytest.approx(v)) for k, v in kinds]
    assert all(m.split_hint == m.kind.split("_")[0] or (m.kind.startswith("test") and m.split_hint in ("test", None))
               for m in got)


def test_notebook_of_training_lines_only_has_no_test_metrics_but_curves() -> None:
    log = "".join(f"{e} epoch, training accuracy: {40 + e:.2f}%, loss = {0.1 / e:.4f}\n" for e in range(1, 8))
    keras = "".join(f"Epoch {e}/3\n1563/1563 - 10s - loss: {1 / e:.4f} - accuracy: {0.5 + e / 10:.4f}\n"
                    for e in range(1, 4))
    for text in (log, "".join(f"epoch {e} train loss {2.3 - e / 10:.3f}\n" for e in range(1, 4)), keras):
        r = parse_notebook(_one_cell(text))
        assert r.test_accuracy is None and r.test_loss is None, text
        assert r.curves and all(p.series.startswith("train_") for p in r.curves)
        assert not [m for m in r.mentions if m.kind.startswith("test_")]
    r = parse_notebook(_one_cell(log))
    assert [p.x for p in r.curves if p.series == "train_acc"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    # the same log followed by the test evaluation: the test lines are the test metrics
    r = parse_notebook(_one_cell(log + "Test set: Average loss: 0.0312, Accuracy: 4812/10000 (48%)\n"))
    assert r.test_accuracy == pytest.approx(0.4812) and r.test_loss == pytest.approx(0.0312)


@pytest.mark.parametrize("text, kinds", [
    # issue 12 I (second round): the four training-line forms of 0000201-0000204
    ("minibatch  2000 loss: 2.263", [("train_loss", 2.263)]),
    ("第1輪 第2000批 訓練 loss: 2.263 acc: 15.0%", [("train_loss", 2.263), ("train_accuracy", 0.15)]),
    ("Finished Training. Final loss: 2.263", [("train_loss", 2.263)]),
    ("batch loss: 2.263, batch acc: 20.0%", [("train_loss", 2.263), ("train_accuracy", 0.2)]),
    # the other counters and markers the tester found read as test lines
    ("Epoch 1\nloss 1.9 acc 30%", [("train_loss", 1.9), ("train_accuracy", 0.3)]),
    ("=== Epoch 1 done ===\nloss 1.9 acc 30%", [("train_loss", 1.9), ("train_accuracy", 0.3)]),
    ("it 2000 loss 1.9", [("train_loss", 1.9)]),
    ("i=1999 loss=1.9", [("train_loss", 1.9)]),
    ("Round 3: loss 1.9", [("train_loss", 1.9)]),
    ("#3 loss 1.9", [("train_loss", 1.9)]),
    ("[3] loss: 1.9", [("train_loss", 1.9)]),
    ("(3, 2000) loss: 1.9", [("train_loss", 1.9)]),
    ("Loss: 0.9 [train]", [("train_loss", 0.9)]),
    ("EPOCH-3 loss 0.9", [("train_loss", 0.9)]),
    ("tr_acc: 0.55", [("train_accuracy", 0.55)]),
    ("running loss 1.5 at minibatch 2000", [("train_loss", 1.5)]),
    # invented: simplified Chinese counters, a "mean batch loss", a Keras-like "step_loss"
    ("第3轮 第200批 loss: 1.25", [("train_loss", 1.25)]),
    ("mean batch loss 1.7", [("train_loss", 1.7)]),
    ("step_loss=1.3", [("train_loss", 1.3)]),
])
def test_training_line_forms_are_training_metrics(text: str, kinds: list[tuple[str, float]]) -> None:
    got = parse_text(text)
    assert [(m.kind, m.value) for m in got] == [(k, pytest.approx(v)) for k, v in kinds]
    assert all(m.split_hint == "train" for m in got)


@pytest.mark.parametrize("text, kinds", [
    # 0000903: the split named at the end of the line covers the whole line
    ("Epoch 2: Loss 0.9 Accuracy 54.4% on test", [("test_loss", 0.9, "test"), ("test_accuracy", 0.544, "test")]),
    ("Epoch 2: loss 1.1 acc 50% (validation)", [("val_loss", 1.1, "val"), ("val_accuracy", 0.5, "val")]),
    # Chinese metric words, traditional and simplified
    ("測試準確率: 55.2%", [("test_accuracy", 0.552, "test")]),
    ("準確率: 55.2%", [("test_accuracy", 0.552, None)]),
    ("正確率 55.2%", [("test_accuracy", 0.552, None)]),
    ("测试集损失: 1.23", [("test_loss", 1.23, "test")]),
    ("驗證準確率：48.0％", [("val_accuracy", 0.48, "val")]),
])
def test_split_at_line_end_and_chinese_metric_words(text: str, kinds: list[tuple[str, float, str | None]]) -> None:
    got = parse_text(text)
    assert [(m.kind, m.value, m.split_hint) for m in got] == [(k, pytest.approx(v), s) for k, v, s in kinds]


_TRAIN_CELL = """
for epoch in range(2):
    for i, (x, y) in enumerate(trainloader):
        optimizer.zero_grad()
        loss = criterion(net(x), y)
        loss.backward()
        optimizer.step()
    print('loss: %.3f' % loss.item())
"""
_EVAL_CELL = """
def evaluate(model, epoch):
    with torch.no_grad():
        for x, y in testloader:
            out = model(x)
    print(f"Epoch {epoch}: loss {l:.3f} acc {a:.1f}%")
evaluate(net, 2)
"""


def test_code_that_printed_a_line_settles_its_split() -> None:
    """An unlabelled `loss:` printed inside a loop that steps the optimizer is a training loss; an
    "Epoch 2: ..." line printed under no_grad by an evaluate() function is the test result."""
    nb = new_notebook(cells=[
        new_code_cell(_TRAIN_CELL, outputs=[stdout("loss: 2.300\nloss: 2.263\n")]),
        new_code_cell(_EVAL_CELL, outputs=[stdout("Epoch 2: loss 0.912 acc 54.4%\n")])])
    r = parse_notebook(nb)
    assert [(m.kind, m.value) for m in r.mentions] == [
        ("train_loss", 2.3), ("train_loss", 2.263), ("test_loss", 0.912), ("test_accuracy", pytest.approx(0.544))]
    assert r.test_loss == pytest.approx(0.912) and r.test_accuracy == pytest.approx(0.544)
    # without the code that printed them the same lines keep what the text says
    bare = new_notebook(cells=[new_code_cell("", outputs=[stdout("loss: 2.263\n")])])
    assert [m.kind for m in parse_notebook(bare).mentions] == ["test_loss"]


def test_carriage_return_progress_bar_keeps_the_last_state() -> None:
    bar = ("Epoch 1:  10%|#         | 78/782 [00:02<00:18, 39.1it/s, loss=2.30, acc=0.10]\r"
           "Epoch 1:  50%|#####     | 391/782 [00:10<00:10, 39.1it/s, loss=1.90, acc=0.30]\r"
           "Epoch 1: 100%|##########| 782/782 [00:20<00:00, 39.1it/s, loss=1.50, acc=0.45]\n"
           "Testing: 100%|##########| 157/157 [00:02<00:00, acc=0.52]\r\n")
    got = parse_text(bar)
    assert [(m.kind, m.value, m.split_hint) for m in got] == [
        ("train_loss", 1.50, "train"), ("train_accuracy", 0.45, "train"), ("test_accuracy", 0.52, "test")]
    curve = parse_curves(bar, cell=2)
    assert [(p.series, p.x, p.value, p.cell) for p in curve] == [
        ("train_loss", 1.0, 1.50, 2), ("train_acc", 1.0, 0.45, 2)]


def test_ansi_colour_codes_are_ignored() -> None:
    got = parse_text("\x1b[32mTest accuracy\x1b[0m: \x1b[1m61.0%\x1b[0m")
    assert one(got, "test_accuracy").value == pytest.approx(0.61)


def test_tutorial_loss_curve_is_in_fractional_epochs() -> None:
    log = "".join(f"[{e}, {i:5d}] loss: {2.3 - 0.1 * (e * 6 + i // 2000):.3f}\n"
                  for e in (1, 2) for i in range(2000, 12001, 2000)) + "Finished Training\n"
    pts = parse_curves(log)
    assert {p.series for p in pts} == {"train_loss"}
    assert [round(p.x, 3) for p in pts] == [round((e - 1) + i / 12000, 3)
                                            for e in (1, 2) for i in range(2000, 12001, 2000)]
    assert pts[0].value == pytest.approx(1.6)


def test_keras_like_curves_and_epoch_header_lines() -> None:
    log = ("Epoch 1/2\n"
           "1563/1563 [==============================] - 10s 6ms/step - loss: 1.50 - accuracy: 0.45"
           " - val_loss: 1.30 - val_accuracy: 0.52\n"
           "Epoch 2/2\n"
           "1563/1563 [==============================] - 10s 6ms/step - loss: 1.20 - accuracy: 0.57"
           " - val_loss: 1.10 - val_accuracy: 0.60\n")
    pts = parse_curves(log)
    by = {(p.series, p.x): p.value for p in pts}
    assert by == {("train_loss", 1.0): 1.5, ("train_acc", 1.0): 0.45, ("val_loss", 1.0): 1.3,
                  ("val_acc", 1.0): 0.52, ("train_loss", 2.0): 1.2, ("train_acc", 2.0): 0.57,
                  ("val_loss", 2.0): 1.1, ("val_acc", 2.0): 0.6}


def test_curves_with_steps_test_accuracy_and_lr() -> None:
    log = ("Epoch [1/10], Step [100/500], Loss: 2.1000\n"
           "Epoch [1/10], Step [500/500], Loss: 1.9000\n"
           "epoch 3 train loss 1.02 test acc 61.2% lr 0.001\n"
           "iter 200: loss=0.8\n")
    pts = [(p.series, round(p.x, 3), p.value) for p in parse_curves(log)]
    assert pts == [("train_loss", 0.2, 2.1), ("train_loss", 1.0, 1.9), ("train_loss", 3.0, 1.02),
                   ("test_acc", 3.0, pytest.approx(0.612)), ("lr", 3.0, 0.001), ("train_loss", 200.0, 0.8)]


def test_unnumbered_lines_make_a_curve_only_when_repeated() -> None:
    assert parse_curves("Test Accuracy: 55%\n") == []
    pts = parse_curves("train loss: 1.5, val acc: 40%\ntrain loss: 1.2, val acc: 50%\n")
    assert [(p.series, p.x) for p in pts] == [("train_loss", 1.0), ("val_acc", 1.0),
                                              ("train_loss", 2.0), ("val_acc", 2.0)]


def test_per_class_lines_are_not_curves() -> None:
    assert parse_curves(TUTORIAL_OUTPUT.split("\n", 1)[1]) == []


# --- notebooks ---------------------------------------------------------------------------

def stdout(text: str) -> nbformat.NotebookNode:
    return new_output("stream", name="stdout", text=text)


def tutorial_notebook() -> nbformat.NotebookNode:
    train_log = "".join(f"[{e}, {i:5d}] loss: {2.2 - 0.05 * e:.3f}\n" for e in (1, 2)
                        for i in range(2000, 12001, 2000)) + "Finished Training\n"
    return new_notebook(cells=[
        new_markdown_cell("# LAB 1-1: Accuracy 99% (a markdown cell is not evidence)"),
        new_code_cell("trainset = torchvision.datasets.CIFAR10(root='/tmp/dataset-nctu')",
                      outputs=[stdout("Files already downloaded and verified\n")]),
        new_code_cell("for epoch in range(2): ...", outputs=[stdout(train_log)]),
        new_code_cell("print(images.shape)", outputs=[new_output(
            "execute_result", data={"text/plain": "torch.Size([4, 3, 32, 32])"}, execution_count=3)]),
        new_code_cell("# test", outputs=[stdout(TUTORIAL_OUTPUT)]),
    ])


def test_parse_notebook_tutorial() -> None:
    r = parse_notebook(tutorial_notebook())
    assert isinstance(r, ParsedMetrics)
    assert r.dataset_guess == "cifar10"
    assert r.test_accuracy == pytest.approx(0.54)
    assert r.test_loss is None  # only training loss was printed
    assert r.per_class_accuracy == approx_dict(TUTORIAL_FRACTIONS)
    assert {p.series for p in r.curves} == {"train_loss"} and len(r.curves) == 12
    assert {m.cell for m in r.mentions if m.kind == "class_accuracy"} == {4}
    json.dumps(r.per_class_accuracy)  # goes into evidence.json as is


def test_last_test_mention_wins_and_train_val_never_do() -> None:
    nb = new_notebook(cells=[
        new_code_cell("", outputs=[stdout("Test accuracy: 41.0%\n")]),
        new_code_cell("", outputs=[stdout(TRAIN_THEN_TEST_LOG)]),
        new_code_cell("", outputs=[stdout("train acc 0.99\nval acc 0.60\nEpoch 9 loss 0.1 acc 0.98\n")]),
    ])
    r = parse_notebook(nb)
    assert r.test_accuracy == pytest.approx(0.521)
    assert r.test_loss == pytest.approx(1.35)


def test_unlabelled_accuracy_is_taken_when_no_test_mention_exists() -> None:
    nb = new_notebook(cells=[new_code_cell("", outputs=[
        stdout("Epoch 1 train acc 0.40 val acc 0.35\nFinished Training\nAccuracy: 55%\nLoss: 1.23\n")])])
    r = parse_notebook(nb)
    assert r.test_accuracy == pytest.approx(0.55) and r.test_loss == pytest.approx(1.23)


def test_validation_is_used_only_when_nothing_better_exists() -> None:
    only_val = new_notebook(cells=[new_code_cell("", outputs=[
        stdout("Epoch 1 train acc 0.40 val acc 0.35\nEpoch 2 train acc 0.50 val acc 0.45\n")])])
    assert parse_notebook(only_val).test_accuracy == pytest.approx(0.45)
    only_train = new_notebook(cells=[new_code_cell("", outputs=[stdout("train acc 0.99\ntrain loss 0.01\n")])])
    r = parse_notebook(only_train)
    assert r.test_accuracy is None and r.test_loss is None


def test_per_class_takes_the_last_complete_block() -> None:
    full_a = TUTORIAL_OUTPUT
    full_b = "".join(f"Accuracy of {n:>5s} : {50 + i} %\n" for i, n in enumerate(TUTORIAL_NAMES))
    partial = "Accuracy of plane : 99 %\nAccuracy of   car : 98 %\n"
    nb = new_notebook(cells=[new_code_cell("", outputs=[stdout(full_a)]),
                             new_code_cell("", outputs=[stdout(full_b)]),
                             new_code_cell("", outputs=[stdout(partial)])])
    r = parse_notebook(nb)
    assert r.per_class_accuracy == approx_dict({c: (50 + i) / 100 for i, c in enumerate(CIFAR10_CLASSES)})


def test_per_class_blocks_split_when_a_class_repeats_in_one_output() -> None:
    per_epoch = "".join(f"epoch {e}\n" + "".join(f"{n}: {10 * e + i}%\n" for i, n in enumerate(TUTORIAL_NAMES))
                        for e in (1, 2, 3))
    r = parse_notebook(new_notebook(cells=[new_code_cell("", outputs=[stdout(per_epoch)])]))
    assert r.per_class_accuracy == approx_dict({c: (30 + i) / 100 for i, c in enumerate(CIFAR10_CLASSES)})


def test_largest_block_when_none_is_complete() -> None:
    nb = new_notebook(cells=[
        new_code_cell("", outputs=[stdout("plane: 50%\ncar: 60%\nbird: 70%\n")]),
        new_code_cell("", outputs=[stdout("plane: 10%\n")]),
    ])
    assert parse_notebook(nb, dataset="cifar10").per_class_accuracy == approx_dict(
        {"airplane": 0.5, "automobile": 0.6, "bird": 0.7})


def test_dataframe_output_is_read_once_from_html() -> None:
    out = new_output("execute_result", execution_count=5,
                     data={"text/html": DATAFRAME_HTML, "text/plain": DATAFRAME_TEXT})
    r = parse_notebook(new_notebook(cells=[new_code_cell("df", outputs=[out])]))
    assert r.dataset_guess == "cifar10"
    assert r.per_class_accuracy == approx_dict(TUTORIAL_FRACTIONS)
    assert {m.source for m in r.mentions} == {"text/html"}
    assert len([m for m in r.mentions if m.kind == "class_accuracy"]) == 10


def test_stderr_and_display_data_are_read() -> None:
    nb = new_notebook(cells=[new_code_cell("", outputs=[
        new_output("stream", name="stderr", text="INFO test_acc=0.61\n"),
        new_output("display_data", data={"text/plain": "Test loss: 1.07"}),
    ])])
    r = parse_notebook(nb)
    assert r.test_accuracy == pytest.approx(0.61) and r.test_loss == pytest.approx(1.07)
    assert [m.source for m in r.mentions] == ["stderr", "text/plain"]


def test_split_stream_outputs_are_joined_before_carriage_returns() -> None:
    nb = new_notebook(cells=[new_code_cell("", outputs=[
        stdout("Test accuracy: 10%"), stdout("\rTest accuracy: 61%\n")])])
    r = parse_notebook(nb)
    assert r.test_accuracy == pytest.approx(0.61)
    assert len([m for m in r.mentions if m.kind == "test_accuracy"]) == 1


def test_food11_notebook_guesses_the_dataset_from_names() -> None:
    lines = "".join(f"Accuracy of {n} : {a}/{b}\n" for n, (a, b) in FOOD_COUNTS.items())
    nb = new_notebook(cells=[new_code_cell("", outputs=[stdout(
        lines + "Test set: Average loss: 0.8731, Accuracy: 2460/3347 (73%)\n")])])
    r = parse_notebook(nb)
    assert r.dataset_guess == "food11"
    assert r.per_class_accuracy == approx_dict({n: a / b for n, (a, b) in FOOD_COUNTS.items()})
    assert r.test_accuracy == pytest.approx(2460 / 3347) and r.test_loss == pytest.approx(0.8731)


def test_food11_class_indices_resolve_after_guessing_from_code() -> None:
    lines = "".join(f"class {i}: {0.5 + i / 100:.2f}\n" for i in range(11))
    nb = new_notebook(cells=[new_code_cell("ImageFolder('/tmp/datasets-nctu/Food-11/training')",
                                           outputs=[stdout(lines)])])
    r = parse_notebook(nb)
    assert r.dataset_guess == "food11"
    assert r.per_class_accuracy["Noodles/Pasta"] == pytest.approx(0.56)
    assert len(r.per_class_accuracy) == 11


def test_mnist_notebook() -> None:
    lines = "".join(f"Accuracy of digit {d}: {97 + d / 10:.1f}%\n" for d in range(10))
    nb = new_notebook(cells=[new_code_cell("", outputs=[stdout(
        lines + "Test set: Average loss: 0.0712, Accuracy: 9787/10000 (98%)\n")])])
    r = parse_notebook(nb)
    assert r.dataset_guess == "mnist"
    assert r.per_class_accuracy["7"] == pytest.approx(0.977)
    assert r.test_accuracy == pytest.approx(0.9787)


def test_mnist_report_notebook_with_dataset_given() -> None:
    nb = new_notebook(cells=[new_code_cell("", outputs=[stdout(MNIST_REPORT)])])
    r = parse_notebook(nb, dataset="mnist")
    assert r.dataset_guess == "mnist" and len(r.per_class_accuracy) == 10
    assert r.test_accuracy == pytest.approx(0.97)


def test_explicit_dataset_wins_over_printed_names() -> None:
    r = parse_notebook(tutorial_notebook(), dataset="food11")
    assert r.dataset_guess == "food11" and r.per_class_accuracy == {}
    assert r.test_accuracy == pytest.approx(0.54)


# --- datasets outside the known class sets (issue 12 J1) ----------------------------------

CATSDOGS_LOG = ("Epoch 1 train loss 0.69 train acc 51.0%\n"
                "Test accuracy: 71.5%\nTest loss: 0.561\n"
                "Accuracy of cat : 70 %\nAccuracy of dog : 73 %\n")


def _one_cell(text: str, source: str = "") -> nbformat.NotebookNode:
    return new_notebook(cells=[new_code_cell(source, outputs=[stdout(text)])])


def test_unknown_dataset_keeps_the_totals_with_no_class_list() -> None:
    # An ImageFolder whose path names no known dataset: the probe calls it "imagefolder".
    r = parse_notebook(_one_cell(CATSDOGS_LOG), dataset="imagefolder")
    assert r.dataset_guess == "imagefolder"
    assert r.test_accuracy == pytest.approx(0.715) and r.test_loss == pytest.approx(0.561)
    assert r.per_class_accuracy == approx_dict({"cat": 0.70, "dog": 0.73})  # known names still read
    for name in ("imagenet", "cifar100", "svhn", ""):
        assert parse_notebook(_one_cell(CATSDOGS_LOG), dataset=name).test_accuracy == pytest.approx(0.715)


def test_catsdogs_is_a_known_dataset_with_its_two_classes() -> None:
    assert CLASS_SETS["catsdogs"] == ("cat", "dog")
    r = parse_notebook(_one_cell(CATSDOGS_LOG), dataset="catsdogs")
    assert r.dataset_guess == "catsdogs" and r.test_accuracy == pytest.approx(0.715)
    assert r.per_class_accuracy == approx_dict({"cat": 0.70, "dog": 0.73})
    # with no name given, cat and dog still vote for nothing but CIFAR-10 (they are its classes too)
    assert parse_notebook(_one_cell(CATSDOGS_LOG)).test_accuracy == pytest.approx(0.715)


def test_class_list_the_dataset_reported_is_used_for_an_unknown_name() -> None:
    # ImageFolder's own `classes`: the folder names, in any spelling
    r = parse_notebook(_one_cell(CATSDOGS_LOG), dataset="imagefolder", classes=["Cats", "Dogs"])
    assert r.dataset_guess == "catsdogs"
    food = parse_notebook(_one_cell("".join(f"class {i}: {50 + i}%\n" for i in range(11))
                                    + "Test accuracy: 55%\n"),
                          dataset="imagefolder", classes=[c.lower() for c in FOOD11_CLASSES])
    assert food.dataset_guess == "food11" and food.per_class_accuracy["Noodles/Pasta"] == pytest.approx(0.56)
    # numbered folders say nothing about which dataset it is: kept as they are
    numbered = [f"{i:02d}" for i in range(11)]
    r = parse_notebook(_one_cell("class 3: 40%\nTest accuracy: 55%\n"), dataset="imagefolder",
                       classes=numbered)
    assert r.dataset_guess == "imagefolder" and r.per_class_accuracy == {"03": pytest.approx(0.40)}
    assert r.test_accuracy == pytest.approx(0.55)
    # junk in place of a class list is ignored, never an error
    for junk in ([], [1, 2], ["x" * 500], "catdog", None):
        assert parse_notebook(_one_cell(CATSDOGS_LOG), dataset="imagefolder",
                              classes=junk).test_accuracy == pytest.approx(0.715)  # type: ignore[arg-type]


def test_empty_and_malformed_notebooks() -> None:
    r = parse_notebook(new_notebook())
    assert r == ParsedMetrics(None, None, {}, None, (), ())
    weird = new_notebook(cells=[new_code_cell("")])
    weird.cells[0]["outputs"] = [{"output_type": "stream"}, {"output_type": "error", "ename": "X"},
                                 {"output_type": "execute_result", "data": None}, "junk",
                                 {"output_type": "stream", "name": "stdout", "text": ["Test acc", "uracy: 0.5\n"]}]
    assert parse_notebook(weird).test_accuracy == pytest.approx(0.5)
    assert parse_notebook({"cells": "nope"}).test_accuracy is None


# --- robustness --------------------------------------------------------------------------

def test_random_text_never_raises() -> None:
    rng = random.Random(1234)
    pieces = ["Accuracy", " of ", "plane", "car", "Noodles/Pasta", "class 3", "digit 7", ": ", " is ",
              "%", "/", "(", ")", "[", "]", "|", "\r", "\n", "\t", "nan", "inf", "-", "e-", "1e400",
              "0.", ".5", "54", "10000", "test", "val_", "loss", "<td>", "</tr>", "<table>", "Epoch ",
              "precision    recall  f1-score   support", "\x1b[31m", "█", "├─", "ﬁ", "\x00"]
    alphabet = string.printable + "%█│\x00é"
    for _ in range(400):
        if rng.random() < 0.5:
            text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
        else:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        for classes in (None, CIFAR10_CLASSES, FOOD11_CLASSES, MNIST_CLASSES):
            for m in parse_text(text, classes=classes) + parse_html(text, classes=classes):
                if not m.kind.endswith("_loss"):
                    assert 0.0 <= m.value <= 1.0
                assert len(m.raw) <= 200
        parse_curves(text)
        canonical_class(text, FOOD11_CLASSES)
    nb = new_notebook(cells=[new_code_cell("", outputs=[stdout("".join(rng.choice(pieces) for _ in range(500)))])])
    parse_notebook(nb)


def test_long_logs_stay_fast() -> None:
    import time
    log = "Epoch 1/10 - loss: 1.02 - acc: 0.61 - val_loss: 1.10 - val_acc: 0.58\n" * 3000
    start = time.perf_counter()
    assert len(parse_text(log)) == 12000
    assert time.perf_counter() - start < 5
    assert parse_text("acc " * 20000 + "9" * 20000) == []
