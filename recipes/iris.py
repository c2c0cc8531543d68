"""Fisher's Iris from the UCI repository: 150 flowers, four measurements and the species.

``iris.data`` is a headerless comma-separated table, one flower a line, ending with a blank line.
The four measurements go into one float32 vector: a classifier's input layer (a Caffe HDF5Data
top, a torch ``Linear``, scikit-learn's ``X``) takes a vector per sample, not four scalars.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from thresher.features import ClassLabel, Schema, Tensor
from thresher.recipe import BadRecord, Input, Miniature, Recipe, Record, Source, Split
from thresher.sources.table import Column, Row, Table, read_table

DATA = "iris.data"
MEASUREMENTS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
SPECIES = ("Iris-setosa", "Iris-versicolor", "Iris-virginica")
TABLE = Table((*(Column(m, "float") for m in MEASUREMENTS), Column("class", "category", names=SPECIES)))


class Iris(Recipe):
    name = "iris"
    version = "1.0.0"
    title = "Iris (UCI)"
    description = ("Fisher's iris data: 150 flowers, 50 of each of three species (setosa, versicolor, "
                   "virginica), with sepal length, sepal width, petal length and petal width in cm. UCI "
                   "publishes no split: the one split, train, holds all 150 in file order. The values are "
                   "iris.data's as published; its iris.names notes that samples 35 and 38 differ from "
                   "Fisher's paper (35 should have petal width 0.2, 38 sepal width 3.6 and petal length "
                   "1.4), and they are kept as the file has them.")
    homepage = "https://archive.ics.uci.edu/dataset/53/iris"
    license = "CC BY 4.0 (the UCI Machine Learning Repository's licence for this dataset)"
    citation = ("@article{fisher1936use, title={The use of multiple measurements in taxonomic problems}, "
                "author={Fisher, Ronald A.}, journal={Annals of Eugenics}, volume={7}, number={2}, "
                "pages={179--188}, year={1936}}")
    # The old path serves the bare file; the new site's iris.zip (3,738 B) bundles it with
    # bezdekIris.data and iris.names, a different file with its own checksum, so it is no mirror.
    sources = (
        Source(DATA, ("https://archive.ics.uci.edu/ml/machine-learning-databases/iris/iris.data",),
               size=4551, sha256="6f608b71a7317216319b4d27b4d9bc84e6abd734eda7872b71a458569e2656c0",
               checksum_source="size+sha256: TFDS url_checksums/iris.txt"),
    )
    splits = (Split("train", 150, "all of iris.data in file order (UCI publishes no split)"),)
    schema = Schema((
        Tensor("features", shape=(4,), dtype="float32",
               description="sepal length, sepal width, petal length, petal width (cm)"),
        ClassLabel("label", names=SPECIES, description="the species"),
    ))

    def inputs(self, split: str, files: Mapping[str, Path]) -> Sequence[Input]:
        """The one file is one input; its rows are counted by reading it (a few kilobytes)."""
        count = sum(1 for _ in read_table(files[DATA], TABLE, label=DATA))
        return [Input(DATA, records=count)]

    def read(self, split: str, files: Mapping[str, Path], part: Input) -> Iterator[Record | BadRecord]:
        for row in read_table(files[DATA], TABLE, label=DATA):
            yield _record(row) if isinstance(row, Row) else row

    def locate(self, split: str, index: int) -> str:
        return f"{DATA} data line {index + 1}"

    def write_miniature(self, directory: Path) -> Miniature:
        """Nine flowers written as UCI writes them (one decimal, species last, a blank last line)."""
        import numpy as np
        rows = [((5.1, 3.5, 1.4, 0.2), 0), ((7.0, 3.2, 4.7, 1.4), 1), ((6.3, 3.3, 6.0, 2.5), 2),
                ((4.9, 3.0, 1.4, 0.2), 0), ((6.4, 3.2, 4.5, 1.5), 1), ((5.8, 2.7, 5.1, 1.9), 2),
                ((4.7, 3.2, 1.3, 0.2), 0), ((6.9, 3.1, 4.9, 1.5), 1), ((7.1, 3.0, 5.9, 2.1), 2)]
        text = "".join(",".join(f"{v:.1f}" for v in values) + f",{SPECIES[label]}\n" for values, label in rows)
        path = directory / DATA
        path.write_text(text + "\n")
        records: list[Record] = [{"features": np.array(values, dtype=np.float32), "label": label}
                                 for values, label in rows]
        return Miniature({DATA: path}, {"train": records})


def _record(row: Row) -> Record:
    import numpy as np
    return {"features": np.array([row.values[m] for m in MEASUREMENTS], dtype=np.float32),
            "label": row.values["class"]}


RECIPE = Iris()
