//! kubelet-rubber-stamp node agent: attests its node's facts to the approver.
