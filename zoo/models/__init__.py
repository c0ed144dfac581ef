"""Model families, one module per family; importing this package registers their entrypoints."""

from zoo.models import barcodebert as barcodebert
