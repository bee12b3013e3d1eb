"""Record the bundled model's training domain in its file (run once, from the project root).

The default model (tiler/model/default.keras) was trained on the Dubai aerial
images of tiles 1-6 in ../shared/data/dubai_aerial before tiler recorded the
training domain; this measures it from the same images, exactly as
`tiler train` now does, and writes it into the model file's metadata.

    python examples/record_domain.py
"""

import os
import sys

from tiler.labels import LabelScheme
from tiler.model import DEFAULT_MODEL_PATH, read_info, update_info
from tiler.training import find_pairs, load_labelled, training_domain

root = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "dubai_aerial")
if not os.path.isdir(root):
    sys.exit(f"{root} not found: this needs the shared Dubai aerial data")
info = read_info(DEFAULT_MODEL_PATH)
labels = LabelScheme.from_file(os.path.join(os.path.dirname(__file__), "dubai_classes.json"))
pairs = find_pairs(os.path.join(root, "tile_[1-6]", "images"), os.path.join(root, "tile_[1-6]", "masks"))
data, names = load_labelled(pairs, labels, channels=info.channels)
domain = training_domain(data, names)
update_info(DEFAULT_MODEL_PATH, domain=domain)
print(f"{len(pairs)} images; domain written to {DEFAULT_MODEL_PATH}:")
for c in domain.channels:
    print(f"  {c.name:<6} {c.dtype:<8} {c.low:8.2f} .. {c.high:8.2f}")
