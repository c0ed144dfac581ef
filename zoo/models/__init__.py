"""Model families, one module per family; importing this package registers their entrypoints."""

from zoo.models import barcodebert as barcodebert
from zoo.models import bert_text as bert_text
from zoo.models import clip as clip
from zoo.models import kmer as kmer
from zoo.models import timm_image as timm_image
