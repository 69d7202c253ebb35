"""The CNI verbs. Each takes the validated environment and configuration and returns the JSON
document to print (or None), raising CniError on failure.

ADD is flexsfc.cni.verb_add, DEL and GC flexsfc.cni.verb_del, CHECK and STATUS flexsfc.cni.verb_check;
what they share (the host end's name among it) flexsfc.cni.verbs."""

from flexsfc.cni.verb_add import add as add
from flexsfc.cni.verb_check import check as check
from flexsfc.cni.verb_check import status as status
from flexsfc.cni.verb_del import delete as delete
from flexsfc.cni.verb_del import gc as gc
from flexsfc.cni.verbs import HOST_PREFIX as HOST_PREFIX
from flexsfc.cni.verbs import host_name as host_name
