"""The label-error audit under its documented name: see :mod:`sigclass.workflows.audit`."""

from .workflows.audit import audit_labels, audit_section, dataset_features, out_of_fold_proba

__all__ = ["audit_labels", "audit_section", "dataset_features", "out_of_fold_proba"]
