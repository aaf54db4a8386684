"""Case studies: a whole problem worked through with the layers below (data, models, techniques,
serving, study), one package per case. `rtb`: real-time bidding with a click model."""
