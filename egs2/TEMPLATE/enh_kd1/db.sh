# Dataset roots. Each can be overridden from the environment, e.g.
#   VOICEBANK_DEMAND=/data/vbd ./run.sh
# A recipe's local/data.sh downloads into the root when it is empty and the network allows it.
VOICEBANK_DEMAND=${VOICEBANK_DEMAND:-downloads/voicebank_demand}
DNS2020=${DNS2020:-downloads/DNS-Challenge}
