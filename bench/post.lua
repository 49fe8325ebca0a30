-- wrk script: the seed's request, POST /seckill/seckill with no body (as JMeter sent it).
wrk.method = "POST"
