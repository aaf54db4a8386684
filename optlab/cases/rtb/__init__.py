"""Real-time bidding with a click model: the bid request and its deployments (`deployments`), the
bidding service over HTTP (`service`), the campaign's traffic, sizing rule and costs (`campaign`),
the capacity plan from service times measured at its own operating point (`plan`), what each load
client could drive (`clients`), the advice in words (`advice`) and the case study's steps
(`casestudy`), as notebook 06 and `python -m optlab.bench rtb` run them."""
